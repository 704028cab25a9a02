extension String {
    /// The text without leading and trailing characters from `set` (Foundation's
    /// `trimmingCharacters(in:)` without importing Foundation).
    package func trimmingCharacters(in set: String) -> String {
        let characters = Set(set)
        return String(drop { characters.contains($0) }.reversed().drop { characters.contains($0) }.reversed())
    }
}
