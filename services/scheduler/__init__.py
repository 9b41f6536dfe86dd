"""The scheduler: firmware -> jobs per device type and test plan (see service.py)."""
