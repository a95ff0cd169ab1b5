"""Test support shipped with voxflow: the OpenRouter emulator (:mod:`voxflow.testing.emulator`)."""
