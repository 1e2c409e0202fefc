"""A key-shaped value for the tests that check a credential pasted where a name belongs is refused.

Built from parts, so no committed line holds something a secret scanner takes for a real key; it is fake."""

FAKE_KEY = "sk-" + "4f8a9c0d1e2b3a4f5c6d7e8f9a0b1c2d"
