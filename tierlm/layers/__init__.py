"""Building blocks of the models: normalisation, rotary embedding, MLP."""
