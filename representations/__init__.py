"""Scene representations forecast by the models, with their encoders and decoders."""
