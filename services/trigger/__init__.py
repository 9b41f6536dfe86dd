"""The trigger service: firmware sources -> recorded firmware + ``firmware.discovered``."""
