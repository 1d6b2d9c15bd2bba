"""An order's timeline: every state change and decision, with its reason, written in the same
transaction as the change."""
