"""The review loop on disk: export, import, the corrected copy, the browser triage."""
