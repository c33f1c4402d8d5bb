"""ELPV demo recipe: solar-cell EL images with distractors and planted copies."""
