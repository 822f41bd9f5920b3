"""The Rasa side of Parley that is not training data: the domain, the endpoint and
channel configuration, the bot runtime's settings, and the two server entry points."""
