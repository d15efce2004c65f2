//go:build !race

package bufchain

// raceEnabled reports a -race build, in which sync.Pool drops items at random.
const raceEnabled = false
