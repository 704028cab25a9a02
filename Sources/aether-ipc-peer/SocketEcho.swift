import ArgumentParser

#if canImport(Glibc)
import Glibc
#endif

extension IPCPeer {
    /// Echo server over a Unix-domain or TCP loopback stream socket, the baselines the ring is
    /// measured against. Messages are framed `[u32 length][payload]`; length 0 ends the session.
    struct SocketEcho: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "socket-echo")
        @Option(help: "Unix socket path to listen on.") var unix: String?
        @Option(help: "TCP port on 127.0.0.1 to listen on.") var tcp: Int?

        func run() throws {
            let listener = try StreamSocket.listen(unixPath: unix, tcpPort: tcp)
            // With --tcp 0 the kernel picks the port; the client reads it from this line.
            say("READY port=\(StreamSocket.boundPort(listener))")
            let connection = accept(listener, nil, nil)
            guard connection >= 0 else { throw ExitCode.failure }
            StreamSocket.tuneForLatency(connection)
            var buffer = [UInt8](repeating: 0, count: 1 << 20)
            var count = 0
            while true {
                var header: UInt32 = 0
                guard StreamSocket.readFully(connection, &header, 4) else { break }
                let length = Int(UInt32(littleEndian: header))
                let ok = buffer.withUnsafeMutableBytes { StreamSocket.readFully(connection, $0.baseAddress!, length) }
                guard ok else { break }
                buffer.withUnsafeBytes { bytes in
                    var frame = [UInt8](repeating: 0, count: 4 + length)
                    frame.withUnsafeMutableBytes { out in
                        out.storeBytes(of: header, as: UInt32.self)
                        out.baseAddress!.advanced(by: 4).copyMemory(from: bytes.baseAddress!, byteCount: length)
                    }
                    _ = frame.withUnsafeBytes { StreamSocket.writeFully(connection, $0.baseAddress!, $0.count) }
                }
                count += 1
                if length == 0 { break }
            }
            close(connection)
            close(listener)
            if let unix { unlink(unix) }
            say("OK count=\(count) cpu_us=\(processCPUMicroseconds())")
        }
    }
}

/// Small blocking socket helpers shared by the echo server and the benchmark client.
enum StreamSocket {
    static func listen(unixPath: String?, tcpPort: Int?) throws -> Int32 {
        if let unixPath {
            let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
            unlink(unixPath)
            var address = unixAddress(unixPath)
            let bound = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
                }
            }
            guard bound == 0, Glibc.listen(fd, 1) == 0 else { throw ExitCode.failure }
            return fd
        }
        guard let tcpPort else { throw ValidationError("give --unix or --tcp") }
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var address = loopbackAddress(port: tcpPort)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard bound == 0, Glibc.listen(fd, 1) == 0 else { throw ExitCode.failure }
        return fd
    }

    static func boundPort(_ fd: Int32) -> Int {
        var address = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        return ok == 0 && address.sin_family == sa_family_t(AF_INET) ? Int(UInt16(bigEndian: address.sin_port)) : 0
    }

    static func unixAddress(_ path: String) -> sockaddr_un {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            let bytes = Array(path.utf8.prefix(raw.count - 1))
            raw.copyBytes(from: bytes)
        }
        return address
    }

    static func loopbackAddress(port: Int) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        return address
    }

    static func tuneForLatency(_ fd: Int32) {
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    }

    static func readFully(_ fd: Int32, _ pointer: UnsafeMutableRawPointer, _ count: Int) -> Bool {
        var done = 0
        while done < count {
            let result = read(fd, pointer + done, count - done)
            if result < 0, errno == EINTR { continue }
            if result <= 0 { return false }
            done += result
        }
        return true
    }

    static func writeFully(_ fd: Int32, _ pointer: UnsafeRawPointer, _ count: Int) -> Bool {
        var done = 0
        while done < count {
            let result = write(fd, pointer + done, count - done)
            if result < 0, errno == EINTR { continue }
            if result <= 0 { return false }
            done += result
        }
        return true
    }
}
