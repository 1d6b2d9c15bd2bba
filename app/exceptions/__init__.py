"""The exceptions queue: everything that needs a person, with the reason."""
