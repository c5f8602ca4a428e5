"""Planning: dataset fingerprint -> plan -> a self-contained bundle written from a template."""
