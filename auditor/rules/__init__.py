"""Rules: known-bug and hazard packs as data, the version matcher, the evaluator, and the
release-notes importer. See docs/rules.md for the pack format."""
