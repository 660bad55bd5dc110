"""Simulated environment sensors (temperature and humidity) for the simulation stack and the sim pod."""
