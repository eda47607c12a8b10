"""Support code for the tests (factories, starters, fake clocks); no tests here."""
