import AetherIPC
import AetherSystem

/// The one thread of an sdk instance: it waits on the response ring (poll, then futex) and
/// hands each decoded response to the function, until the instance has ended.
enum ResponseReader {
    static func start(for handle: InstanceHandle) {
        guard let responses = handle.responses else { return }
        BackgroundThread.start(name: "ring-\(handle.id)") {
            let events = handle.events
            let id = handle.id
            while !handle.readerShouldStop.load(ordering: .acquiring) {
                do throws(SharedMemoryError) {
                    try responses.read(timeout: .milliseconds(100)) { bytes in
                        do throws(InvocationFormatError) {
                            let view = try InvocationResponseView(bytes)
                            events.responseArrived(
                                instance: id, requestID: view.id, response: HandlerResponse(view))
                        } catch {
                            events.malformedResponse(instance: id, requestID: error.requestID, reason: error.reason)
                        }
                    }
                } catch .timedOut {
                    continue
                } catch .corruptedData(let offset, let stored, let computed) {
                    events.responseCorrupted(instance: id)
                    events.responseRingFailed(
                        instance: id,
                        reason:
                            "its response ring carried a corrupted message (offset \(offset), crc stored \(stored), computed \(computed))"
                    )
                } catch {
                    events.responseRingFailed(instance: id, reason: "its response ring failed: \(error)")
                    return
                }
            }
        }
    }
}
