"""Customer emails: one per lifecycle event, in the customer's language, from the merchant's
templates (or the shipped ones), rendered in Jinja2's sandbox."""
