"""Metadata in: each source's rows (`sources`), labelled soundscapes (`soundscapes`),
and the cleaned, balanced, folded manifest (`manifest`)."""
