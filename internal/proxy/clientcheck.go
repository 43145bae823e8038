package proxy

// CheckClients checks o's client tokens and names as New does (a name
// twice, a token shared by two clients, a client without a token), without
// building a proxy: `keywarden check` uses it so that a config the sidecar
// would refuse fails the check too. Errors never carry a token.
func CheckClients(o Options) error {
	_, err := newClients(&o)
	return err
}
