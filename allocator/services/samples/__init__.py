"""The sample kits (tube sets) of an observational study (issue 20): their lifecycle rule
(`rules.move_sample_kit`), the tube sets and the collection scan, the shipments to the central lab
and their receipt (`lab_shipments`), the sample accountability (`accountability`)."""
