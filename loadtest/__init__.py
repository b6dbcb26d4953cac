"""The Locust side of ptu-verify: user classes, streaming clients, records and load plans."""
