"""Helpers the tests share: sample builders, media files written for real."""
