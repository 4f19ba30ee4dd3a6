#pragma once
// A temporary directory standing in for /sys/module (the TDP probe's input),
// removed afterwards.
#include "vmm/kvm/kvm.hpp"

#include <doctest/doctest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

struct FakeSysfs {
    std::filesystem::path root;
    FakeSysfs() {
        std::string tmpl = (std::filesystem::temp_directory_path() / "hv-sysfs-XXXXXX").string();
        REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
        root = tmpl;
    }
    ~FakeSysfs() {
        std::error_code ec;
        std::filesystem::remove_all(root, ec);
    }
    FakeSysfs(const FakeSysfs&) = delete;
    FakeSysfs& operator=(const FakeSysfs&) = delete;
    void param(const std::string& module, const std::string& name, const std::string& contents) {
        const auto dir = root / module / "parameters";
        std::filesystem::create_directories(dir);
        std::ofstream(dir / name) << contents;
    }
    hv::TdpStatus status() const { return hv::tdp_status(root.string()); }
};
