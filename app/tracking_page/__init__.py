"""The customer's tracking page (``GET /track/{token}``): public, read-only, no personal data
beyond what the customer already knows."""
