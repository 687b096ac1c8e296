"""Assessment: pure decisions on measured facts (verdict, media, causes, prediction, remediation)."""
