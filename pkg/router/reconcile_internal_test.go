package router

import "testing"

func TestRouteOfDurable(t *testing.T) {
	tests := []struct {
		name, route string
		ok          bool
	}{
		{"route-adt-to-fhir-store-b", "adt-to-fhir-store", true},
		{"route-adt-p0", "adt", true},
		{"route-adt-x-p12", "adt-x", true},
		{"route-adt-pilot", "", false},
		{"route-adt-p", "", false},
		{"route--b", "", false},
		{"dest-fhir-store-b", "", false},
		{"ingest-splitter", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rt, ok := routeOfDurable(tt.name)
			if rt != tt.route || ok != tt.ok {
				t.Errorf("routeOfDurable(%q) = %q, %v; want %q, %v", tt.name, rt, ok, tt.route, tt.ok)
			}
		})
	}
}
