"""Credits expected from suppliers: the cost of cancelled and returned purchase orders."""
