/// How good a node is for a rank: lower is better, compared field by field. `tie` breaks equal primaries
/// (the fragmentation-aware strategy breaks ties by best fit); node name order breaks what is left.
struct Score: Comparable, Hashable {
    var primary: Int
    var tie: Int

    static func < (a: Score, b: Score) -> Bool { a.primary != b.primary ? a.primary < b.primary : a.tie < b.tie }
    static func + (a: Score, b: Score) -> Score { Score(primary: a.primary + b.primary, tie: a.tie + b.tie) }
    static let zero = Score(primary: 0, tie: 0)
}

/// What a job shape does to a group of alike nodes: how it scores there, and which share it takes.
struct Transition {
    var score: Score
    /// For a share: the GPU it goes on, as (model, thousandths left before), so the node's GPU is found fast.
    var share: (model: Int, leftover: Int)?
    /// The GPU thousandths it takes, and the model of (the first of) those GPUs: what scarcity weighs.
    var takes: Int32 = 0
    var model: Int32 = 0
    /// How the node's CPU and memory surplus changes (GPU thousandths), weighed by the pool's shortage.
    var surplus: (cpu: Float, memory: Float) = (0, 0)
}

/// A job's per-node request with the models it accepts: jobs of one shape score alike.
struct JobShape: Hashable {
    var gpus: Int
    var fraction: Int?
    var exclusive: Bool
    var allMemory: Bool
    var cpuMilli: Int
    var memoryMiB: Int
    /// Accepted model ids, sorted; nil accepts any.
    var models: [Int]?
}

/// A profile: the usable (schedulable) GPUs of a node as sorted (model id << 16 | thousandths left) entries,
/// within one pool, and its free CPU and memory. Nodes with one profile score alike for every job, and a
/// profile whose CPU or memory is too small for a job is passed over whole.
struct Profile: Hashable {
    var pool: Int
    var gpus: [Int32]
    var cpuMilli = 0
    var memoryMiB = 0

    static func entry(model: Int, leftover: Int) -> Int32 { Int32(model << 16 | leftover) }
    static func model(_ e: Int32) -> Int { Int(e >> 16) }
    static func leftover(_ e: Int32) -> Int { Int(e & 0xFFFF) }
}

/// Free GPUs, CPU and memory as fragmentation sees them: the usable GPUs as sorted (model id << 16 | thousandths
/// left) entries. What a task of a given shape could not use of it depends on nothing else, so it is worked out
/// once and kept from one placement call to the next; only the weights of the expected shapes change.
struct FreeState: Hashable {
    var gpus: [Int32]
    var cpuMilli: Int
    var memoryMiB: Int
}

/// Where a rank of one shape leaves a node of one profile: the state left (fragmentation-aware only, else -1),
/// the thousandths taken and their model, and for a share the thousandths its GPU had left (else -1). A share
/// has one move per distinct GPU it could go on, in the profile's order.
struct Move {
    var state: Int32
    var takes: Int32
    var model: Int32
    var leftover: Int32
}

/// Interned profiles and job shapes with everything computed from them, shared by a cluster and the copies
/// it makes to look ahead (backfill reservations), so each is worked out once per placement call; what does not
/// depend on the expected mix — each shape's moves on each profile, what each expected shape could not use of
/// each state — is kept for the next call (a replay's next event).
final class ProfileBook {
    let strategy: ScoringStrategy
    private(set) var mix: FragmentationModel
    private(set) var profiles: [Profile] = []
    private var profileIDs: [Profile: Int] = [:]
    private var freeMilli: [Int] = []
    /// Per profile: the rates of the work its nodes are matched with (worked out when first needed).
    private var rates: [Rates?] = []
    /// Per pool: its nodes ranked by CPU and by memory per free GPU thousandth, weighed by their free GPUs, as
    /// the placement call found them.
    private var nodeLadders: [Int: (cpu: RatioLadder, memory: RatioLadder)] = [:]
    private var shapeIDs: [JobShape: Int] = [:]
    private var shapes: [JobShape] = []
    /// Model names by id (lowercased), as the cluster numbers them, so shapes that name models can be matched.
    var modelNames: [String] = [] {
        didSet { self.termAccepts = [] }
    }
    /// Per term of the mix, per model id: whether the term's shape takes GPUs of that model.
    private var termAccepts: [[Bool]] = []

    // Kept from call to call, bounded by `slotLimit` (all dropped together when it is reached).
    private var stateIDs: [FreeState: Int] = [:]
    private var states: [FreeState] = []
    private var stateFree: [Int] = []
    private var stateCPU: [Int] = []
    private var stateMemory: [Int] = []
    /// Per state, `columns` entries, one per expected shape (by `taskShapeIDs`): the thousandths a task of it
    /// could not use, -1 not yet known. Flat, so the hot loop reads one buffer.
    private var unusable: [Int32] = []
    private var columns = 64
    private var taskShapeIDs: [TaskShape: Int] = [:]
    private var taskShapes: [TaskShape] = []
    /// Per profile, its state (-1: not yet interned).
    private var profileStates: [Int32] = []
    /// Every shape's moves on every profile, referred to by entries.
    private var moveStore: [Move] = []
    // Per call: the expected shape of each term of the mix, and each state's weighed unusable capacity (valid
    // where stamped with this call's generation); the same for each profile's rates.
    private var termShapes: [Int] = []
    private var termWeights: [Double] = []
    private var expectedUnusable: [Double] = []
    private var stamps: [UInt32] = []
    private var rateStamps: [UInt32] = []
    private var generation: UInt32 = 1
    /// The terms whose shapes accept only some models, with their share of the mix's GPU demand: the work that
    /// can go nowhere else, which scarcity weighs against the free capacity of its models.
    private(set) var captive: [(term: Int, share: Double)]

    private func resolveModels() {
        guard self.termAccepts.isEmpty else { return }
        self.termAccepts = self.mix.terms.map { term in
            self.modelNames.map { name in term.shape.models.isEmpty || term.shape.models.contains(name) }
        }
    }

    /// Per model id: whether the term's shape takes that model's GPUs (worked out once the cluster named them all).
    func accepts(term: Int) -> [Bool] {
        self.resolveModels()
        return self.termAccepts[term]
    }
    /// Per shape, per profile: its moves (kept from call to call) and how it scores in this call (where stamped
    /// with this call's generation; nil: cannot take it). Arrays, not a dictionary: every decision reads one
    /// entry per profile of its pool.
    private var entries: [[Entry]] = []
    /// Past `slotLimit` array slots (many shapes × many profiles), further entries go in a dictionary, so the
    /// cache's memory stays bounded whatever the queue and the cluster look like.
    private var overflow: [Int: Entry] = [:]
    private var slots = 0
    let slotLimit: Int
    private struct Entry {
        /// The moves, `count` of them from `first` in `moveStore`: -1 not worked out yet, 0 cannot take it.
        var first: Int32 = 0
        var count: Int32 = -1
        var stamp: UInt32 = 0
        var transition: Transition?
    }

    init(strategy: ScoringStrategy, mix: WorkloadMix, slotLimit: Int = 1 << 20) {
        self.slotLimit = slotLimit
        self.strategy = strategy
        (self.mix, self.captive) = Self.model(of: mix, strategy: strategy)
        (self.termShapes, self.termWeights) = (self.mix.terms.map { self.id(of: $0.shape) }, self.mix.terms.map(\.weight))
    }

    private static func model(of mix: WorkloadMix, strategy: ScoringStrategy) -> (FragmentationModel, [(term: Int, share: Double)]) {
        let model = strategy == .fragmentationAware ? mix.model : FragmentationModel(terms: [])
        let demand = model.terms.map { $0.weight * Double($0.shape.milli ?? $0.shape.gpus * 1000) }
        let total = demand.reduce(0, +)
        return (model, total > 0 ? model.terms.indices.filter { !model.terms[$0].shape.models.isEmpty }.map { ($0, demand[$0] / total) } : [])
    }

    /// Another placement call with the same cluster (a replay's next event): the mix is new, so everything worked
    /// out from it goes; the profiles and shapes interned so far stay, and so do the cluster's index of its nodes.
    func reset(mix: WorkloadMix) {
        (self.mix, self.captive) = Self.model(of: mix, strategy: self.strategy)
        self.termAccepts = []
        self.generation &+= 1
        if self.generation == 0 || self.slots > self.slotLimit {
            self.forgetMoves()
            self.generation = 1
        }
        (self.termShapes, self.termWeights) = (self.mix.terms.map { self.id(of: $0.shape) }, self.mix.terms.map(\.weight))
        self.nodeLadders = [:]
    }

    func id(of profile: Profile) -> Int {
        if let id = self.profileIDs[profile] { return id }
        let id = self.profiles.count
        self.profiles.append(profile)
        self.profileIDs[profile] = id
        self.freeMilli.append(profile.gpus.reduce(0) { $0 + Profile.leftover($1) })
        self.rates.append(nil)
        self.rateStamps.append(0)
        self.profileStates.append(-1)
        return id
    }

    private func id(of shape: TaskShape) -> Int {
        if let id = self.taskShapeIDs[shape] { return id }
        self.taskShapes.append(shape)
        self.taskShapeIDs[shape] = self.taskShapes.count - 1
        if self.taskShapes.count > self.columns {
            // More expected shapes than columns: each state's row widened, what is known kept.
            let wider = self.columns * 2
            var out = [Int32](repeating: -1, count: self.states.count * wider)
            for st in self.states.indices {
                for k in 0..<self.columns { out[st * wider + k] = self.unusable[st * self.columns + k] }
            }
            (self.unusable, self.columns) = (out, wider)
        }
        return self.taskShapes.count - 1
    }

    private func id(of state: FreeState) -> Int32 {
        if let id = self.stateIDs[state] { return Int32(id) }
        self.states.append(state)
        self.stateFree.append(state.gpus.reduce(0) { $0 + Profile.leftover($1) })
        self.stateCPU.append(state.cpuMilli)
        self.stateMemory.append(state.memoryMiB)
        self.unusable.append(contentsOf: repeatElement(-1, count: self.columns))
        self.expectedUnusable.append(0)
        self.stamps.append(0)
        self.stateIDs[state] = self.states.count - 1
        self.slots += 1 + self.columns / 16  // its row weighs about as much as that many entries
        return Int32(self.states.count - 1)
    }

    /// Drops what is kept from call to call (its bound is reached); it is worked out again as needed.
    private func forgetMoves() {
        (self.stateIDs, self.states, self.unusable, self.expectedUnusable, self.stamps) = ([:], [], [], [], [])
        (self.stateFree, self.stateCPU, self.stateMemory, self.moveStore) = ([], [], [], [])
        (self.taskShapes, self.taskShapeIDs, self.columns) = ([], [:], 64)
        self.profileStates = Array(repeating: -1, count: self.profiles.count)
        self.rateStamps = Array(repeating: 0, count: self.profiles.count)
        self.entries = Array(repeating: [], count: self.shapes.count)
        self.overflow = [:]
        self.slots = 0
    }

    /// Ranks a pool's nodes, given as profiles with their node counts, for matching them with the expected work.
    func rank(pool: Int, _ profiles: [(profile: Int, nodes: Int)]) {
        guard self.mix.cpuLadder != nil || self.mix.memoryLadder != nil else { return }
        let withGPUs = profiles.filter { self.freeMilli[$0.profile] > 0 }
        func ladder(_ amount: (Profile) -> Int) -> RatioLadder {
            RatioLadder(
                withGPUs.map { p, n in
                    let free = Double(self.freeMilli[p])
                    return (Double(amount(self.profiles[p])) / free, free * Double(n))
                })
        }
        self.nodeLadders[pool] = (ladder { $0.cpuMilli }, ladder { $0.memoryMiB })
    }

    /// The rates of the work that nodes of `profile` are matched with: by the rank of their CPU and memory per
    /// free GPU among their pool's nodes; the expected work's average where the pool is not ranked.
    private func rates(of profile: Int) -> Rates {
        if self.rateStamps[profile] == self.generation, let r = self.rates[profile] { return r }
        let p = self.profiles[profile]
        let free = Double(self.freeMilli[profile])
        var r = self.mix.average
        if free > 0, let ladders = self.nodeLadders[p.pool] {
            r = self.mix.rates(
                cpuQuantile: ladders.cpu.quantile(of: Double(p.cpuMilli) / free),
                memoryQuantile: ladders.memory.quantile(of: Double(p.memoryMiB) / free))
        }
        self.rates[profile] = r
        self.rateStamps[profile] = self.generation
        return r
    }

    func id(of shape: JobShape) -> Int {
        if let id = self.shapeIDs[shape] { return id }
        self.shapes.append(shape)
        self.entries.append([])
        self.shapeIDs[shape] = self.shapes.count - 1
        return self.shapes.count - 1
    }

    /// How `shape` scores on nodes of `profile`, or nil when their GPUs cannot take it (CPU, memory, health of
    /// GPUs outside the profile and maintenance are checked per node).
    func transition(profile: Int, shape: Int) -> Transition? {
        if profile >= self.entries[shape].count && self.slots < self.slotLimit {
            let more = self.profiles.count - self.entries[shape].count
            self.entries[shape].append(contentsOf: repeatElement(Entry(), count: more))
            self.slots += more
        }
        let inArray = profile < self.entries[shape].count
        var entry = inArray ? self.entries[shape][profile] : self.overflow[profile << 24 | shape] ?? Entry()
        if entry.stamp == self.generation { return entry.transition }
        if entry.count < 0 { (entry.first, entry.count) = self.computeMoves(profile: profile, shape: self.shapes[shape]) }
        entry.transition = entry.count == 0 ? nil : self.computeTransition(profile: profile, shape: shape, moves: entry.first, entry.count)
        entry.stamp = self.generation
        if inArray { self.entries[shape][profile] = entry } else { self.overflow[profile << 24 | shape] = entry }
        return entry.transition
    }

    /// The expected unusable capacity of a state, for the work a node of a profile is matched with (`rates`):
    /// Σ over the mix's terms of weight × what the term's shape could not use (worked out once per state and
    /// shape, summed once per state and call, in the terms' order as `FragmentationModel.fragmentation` does, so
    /// the scores are the same to the last bit), plus what the CPU or memory would strand.
    private func fragmentation(state s: Int32, rates: Rates) -> Double {
        let s = Int(s)
        if self.stamps[s] != self.generation { self.weigh(state: s) }
        return self.expectedUnusable[s]
            + self.mix.stranded(freeMilli: self.stateFree[s], cpuMilli: self.stateCPU[s], memoryMiB: self.stateMemory[s], rates: rates)
    }

    /// Works out state `s`'s weighed unusable capacity for this call's mix.
    private func weigh(state s: Int) {
        self.resolveModels()
        let (weights, shapes, row) = (self.termWeights, self.termShapes, s * self.columns)
        for (t, k) in shapes.enumerated() where self.unusable[row + k] < 0 { self.unusable[row + k] = self.unusable(state: s, shape: k, term: t) }
        var next = 0.0
        self.unusable.withUnsafeBufferPointer { u in
            for t in weights.indices { next += weights[t] * Double(u[row + shapes[t]]) }
        }
        self.expectedUnusable[s] = next
        self.stamps[s] = self.generation
    }

    /// What a task of expected shape `k` (term `t` of this call's mix) could not use of state `s`.
    private func unusable(state s: Int, shape k: Int, term t: Int) -> Int32 {
        let state = self.states[s]
        let shape = self.taskShapes[k]
        let leftovers = state.gpus.map(Profile.leftover)
        let accepts = self.termAccepts[t]
        let u =
            shape.models.isEmpty
            ? shape.unusable(leftovers: leftovers, cpuMilli: state.cpuMilli, memoryMiB: state.memoryMiB)
            : shape.unusable(leftovers: leftovers, cpuMilli: state.cpuMilli, memoryMiB: state.memoryMiB) { g in
                let model = Profile.model(state.gpus[g])
                return model < accepts.count && accepts[model]
            }
        return Int32(u)
    }

    /// The state of a profile's nodes as they are.
    private func state(of profile: Int) -> Int32 {
        if self.profileStates[profile] >= 0 { return self.profileStates[profile] }
        let p = self.profiles[profile]
        let id = self.id(of: FreeState(gpus: p.gpus, cpuMilli: p.cpuMilli, memoryMiB: p.memoryMiB))
        self.profileStates[profile] = id
        return id
    }

    /// Works out a shape's moves on a profile into `moveStore`: where they start and how many (0: cannot take it).
    private func computeMoves(profile id: Int, shape: JobShape) -> (Int32, Int32) {
        let first = Int32(self.moveStore.count)
        let moves = self.moves(profile: id, shape: shape)
        self.moveStore.append(contentsOf: moves)
        self.slots += moves.count
        return (first, Int32(moves.count))
    }

    private func moves(profile id: Int, shape: JobShape) -> [Move] {
        let profile = self.profiles[id]
        guard shape.cpuMilli <= profile.cpuMilli, shape.memoryMiB <= profile.memoryMiB else { return [] }
        let entries = profile.gpus
        // Free CPU and memory once the rank is placed (the whole node's for exclusive ranks).
        let cpuAfter = shape.exclusive ? 0 : profile.cpuMilli - shape.cpuMilli
        let memoryAfter = shape.exclusive || shape.allMemory ? 0 : profile.memoryMiB - shape.memoryMiB
        func accepts(_ e: Int32) -> Bool { shape.models.map { $0.contains(Profile.model(e)) } ?? true }
        // The state the node is left in, given the thousandths left on each usable GPU.
        func state(_ after: [Int]) -> Int32 {
            guard self.strategy == .fragmentationAware else { return -1 }
            let gpus = zip(entries, after).map { Profile.entry(model: Profile.model($0), leftover: $1) }.sorted()
            return self.id(of: FreeState(gpus: gpus, cpuMilli: cpuAfter, memoryMiB: memoryAfter))
        }
        let before = entries.map(Profile.leftover)
        if shape.exclusive {
            guard entries.allSatisfy({ Profile.leftover($0) == 1000 }) else { return [] }
            let acceptable = entries.indices.filter { accepts(entries[$0]) }
            guard acceptable.count >= shape.gpus else { return [] }
            var after = before
            for i in acceptable { after[i] = 0 }
            let model = acceptable.first.map { Profile.model(entries[$0]) } ?? 0
            return [Move(state: state(after), takes: Int32(acceptable.count * 1000), model: Int32(model), leftover: -1)]
        } else if let f = shape.fraction {
            // Each distinct (model, leftover) it fits is a choice (which one is best depends on the mix).
            var out: [Move] = []
            var seen = Set<Int32>()
            for (i, e) in entries.enumerated() where accepts(e) && Profile.leftover(e) >= f && seen.insert(e).inserted {
                var after = before
                after[i] -= f
                out.append(Move(state: state(after), takes: Int32(f), model: Int32(Profile.model(e)), leftover: Int32(Profile.leftover(e))))
            }
            return out
        } else if shape.gpus > 0 {
            let wholeFree = entries.indices.filter { accepts(entries[$0]) && Profile.leftover(entries[$0]) == 1000 }
            guard wholeFree.count >= shape.gpus else { return [] }
            var after = before
            for i in wholeFree.prefix(shape.gpus) { after[i] = 0 }
            return [Move(state: state(after), takes: Int32(shape.gpus * 1000), model: Int32(Profile.model(entries[wholeFree[0]])), leftover: -1)]
        }
        return [Move(state: state(before), takes: 0, model: 0, leftover: -1)]
    }

    private func computeTransition(profile id: Int, shape shapeID: Int, moves first: Int32, _ count: Int32) -> Transition {
        let profile = self.profiles[id]
        let shape = self.shapes[shapeID]
        let cpuAfter = shape.exclusive ? 0 : profile.cpuMilli - shape.cpuMilli
        let memoryAfter = shape.exclusive || shape.allMemory ? 0 : profile.memoryMiB - shape.memoryMiB
        let free = self.freeMilli[id]
        let fragmentationAware = self.strategy == .fragmentationAware
        let rates = fragmentationAware ? self.rates(of: id) : self.mix.average
        // A share's choice: best fit takes the smallest leftover, the fragmentation-aware strategy the one that
        // leaves the least expected unusable capacity (then the smallest leftover; then the first).
        var move = self.moveStore[Int(first)]
        var after = fragmentationAware ? self.fragmentation(state: move.state, rates: rates) : 0
        for i in Int(first) + 1..<Int(first + count) {
            let m = self.moveStore[i]
            let expected = fragmentationAware ? self.fragmentation(state: m.state, rates: rates) : 0
            if (expected, m.leftover) < (after, move.leftover) { (move, after) = (m, expected) }
        }
        let freeAfter = free - Int(move.takes)
        var surplus: (cpu: Double, memory: Double) = (0, 0)
        let score: Score
        switch self.strategy {
        case .fragmentationAware:
            // Thousandths of a thousandth, so scores compare exactly and equal inputs tie. Before and after are
            // measured against the work the node was matched with before.
            let growth = after - self.fragmentation(state: self.state(of: id), rates: rates)
            score = Score(primary: Int((growth * 1000).rounded()), tie: freeAfter)
            let before = self.mix.surplus(freeMilli: free, cpuMilli: profile.cpuMilli, memoryMiB: profile.memoryMiB, rates: rates)
            let now = self.mix.surplus(freeMilli: freeAfter, cpuMilli: cpuAfter, memoryMiB: memoryAfter, rates: rates)
            surplus = (now.cpu - before.cpu, now.memory - before.memory)
        case .bestFit: score = Score(primary: freeAfter, tie: 0)
        case .spread: score = Score(primary: -freeAfter, tie: 0)
        case .firstFit: score = .zero
        }
        return Transition(
            score: score, share: shape.fraction == nil ? nil : (Int(move.model), Int(move.leftover)), takes: move.takes, model: move.model,
            surplus: (Float(surplus.cpu), Float(surplus.memory)))
    }
}
