package store

// InsertColumns returns the columns Insert writes to table, in order, for
// tests of the external package.
func InsertColumns(table string) []string {
	for _, t := range NewBatch().tables() {
		if t.name() == table {
			var names []string
			for _, c := range t.columns() {
				names = append(names, c.name)
			}
			return names
		}
	}
	return nil
}

// BatchTables lists the tables a Batch fills.
func BatchTables() []string {
	var names []string
	for _, t := range NewBatch().tables() {
		names = append(names, t.name())
	}
	return names
}
