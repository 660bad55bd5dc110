"""The burn-in sequencer: recipes of thermal cycles, IV scans and module tests run unattended and resumably."""
