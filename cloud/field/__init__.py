"""Field work (抄收催, DESIGN §15): meter books, reading by hand, collection and dunning."""
