"""Scripted stand-ins for the network services real agent CLIs talk to."""
