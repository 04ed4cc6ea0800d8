"""anomalib models (PatchCore, and any model anomalib's ``get_model`` builds) as Localizers, offline."""
