"""Tests of vlm_collate.formats: row formats, detection and role checks."""
