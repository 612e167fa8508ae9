"""Drug supply: kit lists, stock, shipments and receipt, kit
status changes, labels and reconciliation (KIT-, SUP-)."""
