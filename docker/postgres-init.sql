-- Rasa keeps its conversations in a database of its own.
CREATE DATABASE rasa OWNER parley;
