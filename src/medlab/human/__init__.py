"""Human evaluation: blinded rating packages out (``blind`` stage), completed ratings in,
unblinded, checked for agreement and summarised (``unblind`` stage)."""
