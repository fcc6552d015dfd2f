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

/// Interned profiles and job shapes with everything computed from them, shared by a cluster and the copies
/// it makes to look ahead (backfill reservations), so each is worked out once per placement call.
final class ProfileBook {
    let strategy: ScoringStrategy
    private(set) var mix: FragmentationModel
    private(set) var profiles: [Profile] = []
    private var profileIDs: [Profile: Int] = [:]
    private var freeMilli: [Int] = []
    private var fragmentation: [Double?] = []
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
    /// Per shape, per profile: not worked out yet, cannot take it, or how it scores. Arrays, not a dictionary:
    /// every decision reads one entry per profile of its pool.
    private var transitions: [[Slot]] = []
    /// Past `slotLimit` array slots (many shapes × many profiles), further answers go in a dictionary, so the
    /// cache's memory stays bounded whatever the queue and the cluster look like.
    private var overflow: [Int: Slot] = [:]
    private var slots = 0
    let slotLimit: Int
    private enum Slot {
        case unknown
        case none
        case some(Transition)
    }

    init(strategy: ScoringStrategy, mix: WorkloadMix, slotLimit: Int = 1 << 20) {
        self.slotLimit = slotLimit
        self.strategy = strategy
        (self.mix, self.captive) = Self.model(of: mix, strategy: strategy)
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
        self.fragmentation = Array(repeating: nil, count: self.profiles.count)
        self.rates = Array(repeating: nil, count: self.profiles.count)
        self.nodeLadders = [:]
        self.transitions = Array(repeating: [], count: self.shapes.count)
        self.overflow = [:]
        self.slots = 0
    }

    func id(of profile: Profile) -> Int {
        if let id = self.profileIDs[profile] { return id }
        let id = self.profiles.count
        self.profiles.append(profile)
        self.profileIDs[profile] = id
        self.freeMilli.append(profile.gpus.reduce(0) { $0 + Profile.leftover($1) })
        self.fragmentation.append(nil)
        self.rates.append(nil)
        return id
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
        if let r = self.rates[profile] { return r }
        let p = self.profiles[profile]
        let free = Double(self.freeMilli[profile])
        var r = self.mix.average
        if free > 0, let ladders = self.nodeLadders[p.pool] {
            r = self.mix.rates(
                cpuQuantile: ladders.cpu.quantile(of: Double(p.cpuMilli) / free),
                memoryQuantile: ladders.memory.quantile(of: Double(p.memoryMiB) / free))
        }
        self.rates[profile] = r
        return r
    }

    func id(of shape: JobShape) -> Int {
        if let id = self.shapeIDs[shape] { return id }
        self.shapes.append(shape)
        self.transitions.append([])
        self.shapeIDs[shape] = self.shapes.count - 1
        return self.shapes.count - 1
    }

    /// How `shape` scores on nodes of `profile`, or nil when their GPUs cannot take it (CPU, memory, health of
    /// GPUs outside the profile and maintenance are checked per node).
    func transition(profile: Int, shape: Int) -> Transition? {
        if profile >= self.transitions[shape].count && self.slots < self.slotLimit {
            let more = self.profiles.count - self.transitions[shape].count
            self.transitions[shape].append(contentsOf: repeatElement(.unknown, count: more))
            self.slots += more
        }
        let inArray = profile < self.transitions[shape].count
        switch inArray ? self.transitions[shape][profile] : self.overflow[profile << 24 | shape] ?? .unknown {
        case .some(let t): return t
        case .none: return nil
        case .unknown: break
        }
        let t = self.computeTransition(profile: profile, shape: self.shapes[shape])
        let slot: Slot = t.map { .some($0) } ?? .none
        if inArray { self.transitions[shape][profile] = slot } else { self.overflow[profile << 24 | shape] = slot }
        return t
    }

    private func fragmentation(of profile: Int) -> Double {
        if let f = self.fragmentation[profile] { return f }
        let p = self.profiles[profile]
        let f = self.fragmentation(
            p.gpus.map(Profile.leftover), models: p.gpus, cpuMilli: p.cpuMilli, memoryMiB: p.memoryMiB, rates: self.rates(of: profile))
        self.fragmentation[profile] = f
        return f
    }

    /// The mix's expected fragmentation of GPUs with these leftovers, the models those of `entries`.
    private func fragmentation(_ leftovers: [Int], models entries: [Int32], cpuMilli: Int, memoryMiB: Int, rates: Rates) -> Double {
        self.resolveModels()
        return self.mix.fragmentation(leftovers: leftovers, cpuMilli: cpuMilli, memoryMiB: memoryMiB, rates: rates) { t, g in
            let model = Profile.model(entries[g])
            return model < self.termAccepts[t].count && self.termAccepts[t][model]
        }
    }

    private func computeTransition(profile id: Int, shape: JobShape) -> Transition? {
        let profile = self.profiles[id]
        guard shape.cpuMilli <= profile.cpuMilli, shape.memoryMiB <= profile.memoryMiB else { return nil }
        let entries = profile.gpus
        // Free CPU and memory once the rank is placed (the whole node's for exclusive ranks).
        let cpuAfter = shape.exclusive ? 0 : profile.cpuMilli - shape.cpuMilli
        let memoryAfter = shape.exclusive || shape.allMemory ? 0 : profile.memoryMiB - shape.memoryMiB
        let free = self.freeMilli[id]
        let rates = self.strategy == .fragmentationAware ? self.rates(of: id) : self.mix.average
        func accepts(_ e: Int32) -> Bool { shape.models.map { $0.contains(Profile.model(e)) } ?? true }
        // The thousandths left on each usable GPU once the rank is placed, and what it takes.
        var after = entries.map(Profile.leftover)
        var takes = 0
        var model = 0
        var share: (model: Int, leftover: Int)?
        if shape.exclusive {
            guard entries.allSatisfy({ Profile.leftover($0) == 1000 }) else { return nil }
            let acceptable = entries.indices.filter { accepts(entries[$0]) }
            guard acceptable.count >= shape.gpus else { return nil }
            for i in acceptable { after[i] = 0 }
            takes = acceptable.count * 1000
            model = acceptable.first.map { Profile.model(entries[$0]) } ?? 0
        } else if let f = shape.fraction {
            // Each distinct (model, leftover) it fits is a choice; best fit takes the smallest leftover, the
            // fragmentation-aware strategy the one that leaves the least expected unusable capacity.
            var best: (score: Double, leftover: Int, index: Int)?
            var seen = Set<Int32>()
            for (i, e) in entries.enumerated() where accepts(e) && Profile.leftover(e) >= f && seen.insert(e).inserted {
                var trial = after
                trial[i] -= f
                let expected = self.fragmentation(trial, models: entries, cpuMilli: cpuAfter, memoryMiB: memoryAfter, rates: rates)
                let candidate = (score: expected, leftover: Profile.leftover(e), index: i)
                if best.map({ (candidate.score, candidate.leftover) < ($0.score, $0.leftover) }) ?? true { best = candidate }
            }
            guard let choice = best else { return nil }
            after[choice.index] -= f
            share = (Profile.model(entries[choice.index]), choice.leftover)
            takes = f
            model = Profile.model(entries[choice.index])
        } else if shape.gpus > 0 {
            let wholeFree = entries.indices.filter { accepts(entries[$0]) && Profile.leftover(entries[$0]) == 1000 }
            guard wholeFree.count >= shape.gpus else { return nil }
            for i in wholeFree.prefix(shape.gpus) { after[i] = 0 }
            takes = shape.gpus * 1000
            model = Profile.model(entries[wholeFree[0]])
        }
        let freeAfter = free - takes
        var surplus: (cpu: Double, memory: Double) = (0, 0)
        let score: Score
        switch self.strategy {
        case .fragmentationAware:
            // Thousandths of a thousandth, so scores compare exactly and equal inputs tie. Before and after are
            // measured against the work the node was matched with before.
            let growth =
                self.fragmentation(after, models: entries, cpuMilli: cpuAfter, memoryMiB: memoryAfter, rates: rates) - self.fragmentation(of: id)
            score = Score(primary: Int((growth * 1000).rounded()), tie: freeAfter)
            let before = self.mix.surplus(freeMilli: free, cpuMilli: profile.cpuMilli, memoryMiB: profile.memoryMiB, rates: rates)
            let now = self.mix.surplus(freeMilli: freeAfter, cpuMilli: cpuAfter, memoryMiB: memoryAfter, rates: rates)
            surplus = (now.cpu - before.cpu, now.memory - before.memory)
        case .bestFit: score = Score(primary: freeAfter, tie: 0)
        case .spread: score = Score(primary: -freeAfter, tie: 0)
        case .firstFit: score = .zero
        }
        return Transition(
            score: score, share: share, takes: Int32(takes), model: Int32(model), surplus: (Float(surplus.cpu), Float(surplus.memory)))
    }
}
