"""Choosing a backend: what this machine has (:mod:`.platform`) and how backends are ranked for a model on it (:mod:`.choice`)."""
