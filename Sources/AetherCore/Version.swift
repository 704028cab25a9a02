/// The version `aether --version` prints.
public enum AetherVersion {
    public static let current = "0.1.0"
}
