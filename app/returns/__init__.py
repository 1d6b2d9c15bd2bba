"""Returns (RMA): requests, approval, the supplier, receipt, exchanges, stalls."""
