"""The timeout service: keeps every firmware and job moving to a final state (see service.py)."""
