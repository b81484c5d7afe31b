"""The probe: runs a payload inside the audited image and compares what the frameworks compute."""
