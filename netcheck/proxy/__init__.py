"""Proxy decisions: the laptop's proxy settings, PAC files, and which proxy each URL takes."""
