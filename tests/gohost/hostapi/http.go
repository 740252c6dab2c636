package hostapi

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
)

const maxBody = 64 << 20

// NewHandler returns the control API for an engine and a fault registry.
func NewHandler(eng Engine, faults *Faults) http.Handler {
	h := &handler{eng: eng, faults: faults}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/mounts", h.mount)
	mux.HandleFunc("DELETE /v1/mounts/{rest...}", h.unmount)
	mux.HandleFunc("POST /v1/mounts/{rest...}", h.mountAction)
	mux.HandleFunc("GET /v1/processes", h.processes)
	mux.HandleFunc("POST /v1/request", h.request)
	mux.HandleFunc("POST /v1/faults", h.addFault)
	mux.HandleFunc("DELETE /v1/faults", h.clearFaults)
	mux.HandleFunc("GET /v1/faults", h.listFaults)
	mux.HandleFunc("GET /v1/storage", h.storageDump)
	mux.HandleFunc("PUT /v1/storage", h.storagePut)
	mux.HandleFunc("DELETE /v1/storage", h.storageDelete)
	mux.HandleFunc("POST /v1/invalidate", h.invalidate)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeErr(w, Errorf(http.StatusNotFound, "no such endpoint: %s %s", r.Method, r.URL.Path))
	})
	return mux
}

type handler struct {
	eng    Engine
	faults *Faults
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if v == nil {
		return
	}
	enc := json.NewEncoder(w)
	_ = enc.Encode(v)
}

func writeErr(w http.ResponseWriter, err error) {
	writeJSON(w, StatusOf(err), map[string]string{"error": err.Error()})
}

func readJSON(r *http.Request, v any) error {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody))
	if err != nil {
		return Errorf(http.StatusBadRequest, "reading body: %v", err)
	}
	if len(strings.TrimSpace(string(body))) == 0 {
		return Errorf(http.StatusBadRequest, "empty body")
	}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return Errorf(http.StatusBadRequest, "invalid JSON body: %v", err)
	}
	return nil
}

func (h *handler) mount(w http.ResponseWriter, r *http.Request) {
	var spec MountSpec
	if err := readJSON(r, &spec); err != nil {
		writeErr(w, err)
		return
	}
	spec.Path = NormalizeMount(spec.Path)
	if spec.Path == "" {
		writeErr(w, Errorf(http.StatusBadRequest, "missing mount path"))
		return
	}
	info, err := h.eng.Mount(r.Context(), spec)
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, info)
}

func (h *handler) unmount(w http.ResponseWriter, r *http.Request) {
	path := NormalizeMount(r.PathValue("rest"))
	if path == "" {
		writeErr(w, Errorf(http.StatusBadRequest, "missing mount path"))
		return
	}
	if err := h.eng.Unmount(r.Context(), path); err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"path": path})
}

// mountAction handles POST /v1/mounts/{path}/reload (the path may contain
// slashes, so the action is split off the end).
func (h *handler) mountAction(w http.ResponseWriter, r *http.Request) {
	rest := strings.TrimSuffix(r.PathValue("rest"), "/")
	path, ok := strings.CutSuffix(rest, "/reload")
	if !ok || NormalizeMount(path) == "" {
		writeErr(w, Errorf(http.StatusNotFound, "unknown mount action: %s", r.URL.Path))
		return
	}
	path = NormalizeMount(path)
	if err := h.eng.Reload(r.Context(), path); err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"path": path})
}

func (h *handler) processes(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, h.eng.Processes())
}

func (h *handler) request(w http.ResponseWriter, r *http.Request) {
	var req Request
	if err := readJSON(r, &req); err != nil {
		writeErr(w, err)
		return
	}
	req.Mount = NormalizeMount(req.Mount)
	if req.Mount == "" {
		writeErr(w, Errorf(http.StatusBadRequest, "missing mount"))
		return
	}
	reply, err := h.eng.HandleRequest(r.Context(), req)
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, reply)
}

func (h *handler) addFault(w http.ResponseWriter, r *http.Request) {
	var rule FaultRule
	if err := readJSON(r, &rule); err != nil {
		writeErr(w, err)
		return
	}
	rule.Mount = NormalizeMount(rule.Mount)
	id, err := h.faults.Add(rule)
	if err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"id": id})
}

func (h *handler) clearFaults(w http.ResponseWriter, r *http.Request) {
	h.faults.Clear()
	writeJSON(w, http.StatusOK, map[string]any{})
}

func (h *handler) listFaults(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"faults": h.faults.List()})
}

func (h *handler) storageDump(w http.ResponseWriter, r *http.Request) {
	mount := NormalizeMount(r.URL.Query().Get("mount"))
	entries, err := h.eng.StorageDump(r.Context(), mount, r.URL.Query().Get("prefix"))
	if err != nil {
		writeErr(w, err)
		return
	}
	if entries == nil {
		entries = map[string][]byte{}
	}
	// encoding/json writes []byte as standard base64.
	writeJSON(w, http.StatusOK, map[string]any{"entries": entries})
}

func (h *handler) storagePut(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Mount string `json:"mount"`
		Key   string `json:"key"`
		Value []byte `json:"value"`
	}
	if err := readJSON(r, &body); err != nil {
		writeErr(w, err)
		return
	}
	if body.Key == "" {
		writeErr(w, Errorf(http.StatusBadRequest, "missing key"))
		return
	}
	if err := h.eng.StoragePut(r.Context(), NormalizeMount(body.Mount), body.Key, body.Value); err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{})
}

func (h *handler) storageDelete(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if q.Get("key") == "" {
		writeErr(w, Errorf(http.StatusBadRequest, "missing key"))
		return
	}
	if err := h.eng.StorageDelete(r.Context(), NormalizeMount(q.Get("mount")), q.Get("key")); err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{})
}

func (h *handler) invalidate(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Mount string `json:"mount"`
		Key   string `json:"key"`
	}
	if err := readJSON(r, &body); err != nil {
		writeErr(w, err)
		return
	}
	if err := h.eng.Invalidate(r.Context(), NormalizeMount(body.Mount), body.Key); err != nil {
		writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{})
}

// MountNotFound is the standard error for an unknown mount.
func MountNotFound(path string) error {
	return Errorf(http.StatusNotFound, "no mount at %q", path)
}
