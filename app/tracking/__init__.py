"""Polling suppliers for tracking, and the parcels and purchase orders that stopped moving."""
