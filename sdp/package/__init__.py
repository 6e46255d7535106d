"""The document package (dokumentpakke): ASiC-E container, XAdES signature, CMS encryption."""
