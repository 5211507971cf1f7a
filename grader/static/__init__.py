"""The code as written: parsing, the template's facts, the tampering scan, and the rules
(rules/)."""
