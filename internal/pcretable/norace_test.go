//go:build !race

package pcretable

const raceEnabled = false
