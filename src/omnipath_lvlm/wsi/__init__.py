"""Whole-slide access, tissue masks and prompt-guided detail feature completion (PGFC)."""

# the --num-regions help of analyze, chat and demo (here: importing wsi.pgfc would load torch for --help)
NUM_REGIONS_HELP = "S, detail regions per answer (default: the model's, from its pgfc.json; else 8)"
