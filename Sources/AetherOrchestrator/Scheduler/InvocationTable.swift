/// The requests a scheduler holds, from `submit` to their outcome: each one is either queued
/// (waiting for an instance) or placed (in flight on an instance under a request id), and has
/// a deadline. Part of `FunctionScheduler`'s state; no rules of its own beyond keeping the
/// queue, the placements and the deadlines consistent.
struct InvocationTable<Request: Sendable>: Sendable {
    struct Entry: Sendable {
        let request: Request
        let arrived: SchedulerInstant
        /// Set when it was dispatched to an instance that became ready after it arrived.
        var coldStart: ColdStart?
        /// Where it is in flight: which instance, under which request id (nil: queued).
        var placement: (instance: InstanceID, requestID: UInt64)?
        /// It has been placed before (its instance's ring had no room and it was queued again).
        var wasPlaced = false
    }

    private var entries: [InvocationID: Entry] = [:]
    /// Queued ids, oldest first. Ids no longer queued (timed out) are skipped at the front.
    private var queue = FIFO<InvocationID>()
    private var queued: Set<InvocationID> = []
    /// Every request's deadline in submission order: with one timeout per function they are
    /// already sorted. Ids no longer held are dropped when they reach the front.
    private var deadlines = FIFO<(deadline: SchedulerInstant, id: InvocationID)>()
    private var nextID: UInt64 = 0

    var isEmpty: Bool { entries.isEmpty }
    var queuedCount: Int { queued.count }

    subscript(id: InvocationID) -> Entry? { entries[id] }

    /// Takes a new request with its deadline; it is neither queued nor placed yet.
    mutating func add(_ request: Request, arrived: SchedulerInstant, deadline: SchedulerInstant) -> InvocationID {
        let id = InvocationID(rawValue: nextID)
        nextID += 1
        entries[id] = Entry(request: request, arrived: arrived)
        deadlines.append((deadline, id))
        return id
    }

    mutating func enqueue(_ id: InvocationID) {
        queue.append(id)
        queued.insert(id)
    }

    /// Back to the front of the queue (its instance could not take it after all).
    mutating func requeueFirst(_ id: InvocationID) {
        entries[id]?.placement = nil
        queue.prepend(id)
        queued.insert(id)
    }

    /// The oldest queued request, taken out of the queue.
    mutating func dequeue() -> InvocationID? {
        while let id = queue.popFirst() {
            if queued.remove(id) != nil { return id }
        }
        return nil
    }

    /// Takes a request out of the queue if it is there.
    mutating func unqueue(_ id: InvocationID) -> Bool {
        queued.remove(id) != nil
    }

    /// Every queued request, oldest first, taken out of the queue.
    mutating func dequeueAll() -> [InvocationID] {
        queue.removeAll().filter { queued.remove($0) != nil }
    }

    /// Puts a request in flight on an instance; true the first time for this request.
    @discardableResult
    mutating func place(_ id: InvocationID, on instance: InstanceID, requestID: UInt64, coldStart: ColdStart?) -> Bool {
        // One lookup, the entry changed where it is stored (this runs for every request).
        guard let index = entries.index(forKey: id) else { return false }
        let first = !entries.values[index].wasPlaced
        entries.values[index].placement = (instance, requestID)
        entries.values[index].coldStart = coldStart
        entries.values[index].wasPlaced = true
        return first
    }

    mutating func unplace(_ id: InvocationID) {
        entries[id]?.placement = nil
    }

    /// Forgets a request (it got its outcome).
    mutating func remove(_ id: InvocationID) -> Entry? {
        let entry = entries.removeValue(forKey: id)
        while let front = deadlines.first, entries[front.id] == nil { _ = deadlines.popFirst() }
        return entry
    }

    /// Ids whose deadline is at or before `now`, still held, oldest first.
    mutating func expired(at now: SchedulerInstant) -> [InvocationID] {
        var due: [InvocationID] = []
        while let (deadline, id) = deadlines.first, deadline <= now {
            _ = deadlines.popFirst()
            if entries[id] != nil { due.append(id) }
        }
        return due
    }

    /// The earliest deadline of a request still held.
    var earliestDeadline: SchedulerInstant? { deadlines.first?.deadline }
}
