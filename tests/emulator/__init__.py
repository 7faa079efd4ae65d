"""Tests of the Scenario API emulator (a package, so its helpers import as ``emulator.tools``)."""
