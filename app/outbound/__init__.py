"""Outbound webhooks: the merchant's endpoints (its ERP, its CRM) hear of each lifecycle event,
signed as the Standard Webhooks specification says, at least once, with a stable id."""
