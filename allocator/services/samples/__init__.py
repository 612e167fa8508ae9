"""The sample kits of an observational study (issue 20): tube sets, their collection at the
bedside, their shipment to the central lab and their accountability."""
